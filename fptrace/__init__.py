"""fptrace: trace and benchmark FPU/xstate save and restore costs on Linux x86."""

__version__ = "0.1.0"
