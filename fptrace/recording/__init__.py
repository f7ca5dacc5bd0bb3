"""recording stage of fptrace."""
