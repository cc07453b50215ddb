"""The mapping file format (format.py), its SQL parameter helper, JSON Schema and the example mappings."""
