# Makes tests/package a package so its test modules (test_version.py, ...) never
# clash with same-named modules in other tests/ folders.
