"""sevctl: the command-line client of sevd (QMP via qemu.qmp) and the guest owner verbs."""
