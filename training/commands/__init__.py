"""One module per ``mbmt-train`` sub-command; each defines ``add_arguments`` and ``run``."""
