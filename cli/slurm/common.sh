# Sourced by the example sbatch scripts: the environment every task needs.
# Edit the paths for your cluster, or export them before `sbatch`.
export CT_DATA_ROOT="${CT_DATA_ROOT:-$HOME/data/luna16}"   # LUNA16 root: subset0..9/ and the CSVs
# The cache's SQLite must not live on NFS/Lustre/GPFS: use node-local scratch, filled per node.
export CT_CACHE_DIR="${CT_CACHE_DIR:-${TMPDIR:-/tmp}/ct-cache-$USER}"
export CT_RUNS="${CT_RUNS:-$HOME/ct-runs}"                 # checkpoints, TensorBoard logs, findings (shared disk is fine)
CT_VENV="${CT_VENV:-$HOME/ct/.venv}"                       # the checkout's virtual environment
# shellcheck disable=SC1091
[ -f "$CT_VENV/bin/activate" ] && source "$CT_VENV/bin/activate"
mkdir -p "$CT_CACHE_DIR" "$CT_RUNS/logs"
