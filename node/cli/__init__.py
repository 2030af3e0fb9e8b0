"""The command-line programs: `dkms` (main.py) and `dkms-node` (node.py), one module per
command group. Nothing outside this package imports from it."""
