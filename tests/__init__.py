"""The tests mirror the package: tests/<subpackage>/ holds the tests of ct_pipeline/<subpackage>/, the
top level those of ct_pipeline's top-level modules and the few files whose cases cross every stage
(each says so), tests/cli/ the commands (test_<command>_cmd.py) and the CLI-wide promises (exit codes,
one-line errors, the property tests). Fixtures are in conftest.py; plain builders in tests/helpers/.

Every folder is a package so that two folders may hold files of one name (test_config.py) and so that
tests/cli/ never shadows the cli package.
"""
