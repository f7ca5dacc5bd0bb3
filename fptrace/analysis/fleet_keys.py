"""What `fptrace fleet` (and `compare DIR --group-by`) groups by: kept apart from
analysis/fleet.py so that building the command line imports no pandas."""

RUN_KEYS = ("host", "kernel", "date", "cpu")  # a recording's (from its path or manifest)
ROW_KEYS = ("cgroup", "comm")  # a task's (from the tasks tables)
GROUP_KEYS = ("host", "kernel", "cgroup", "comm", "date", "cpu")
PARTITIONS = ("host", "date")  # path components the agent writes (recording/partitions.py)
