"""Benchmarks of TimeTrial itself (run as scripts: `python benchmarks/<name>.py --help`)."""
