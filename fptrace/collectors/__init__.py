"""collectors stage of fptrace."""
