"""tests/fleet is a package so its conftest and modules never shadow those of
other tests/ folders."""
