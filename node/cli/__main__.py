"""`python -m dkms.node.cli`: the `dkms` program."""

from dkms.node.cli.main import entry

entry()
