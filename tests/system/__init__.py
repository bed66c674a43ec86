"""tests/system is a package so its conftest does not shadow tests/conftest.py
(rootdir-relative "from conftest import ..." in other folders)."""
