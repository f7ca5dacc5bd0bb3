"""reports stage of fptrace."""
