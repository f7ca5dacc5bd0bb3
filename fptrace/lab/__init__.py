"""`fptrace lab`: run a workload under `fptrace record` inside other kernels in qemu."""
