"""analysis stage of fptrace."""
