"""workloads stage of fptrace."""
