"""Starting, watching and always stopping guest VMs."""
