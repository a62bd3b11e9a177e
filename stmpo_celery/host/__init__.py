"""The host: CPU topology and NUMA maps, the spawn plan for this host, pinning,
process trees, parent-death watches and per-OS font installs.

This is the platform layer (its one face: :mod:`._platform`; per OS: ``_linux``,
``_windows``, ``_macos``): the only place that asks which OS it runs on. Runs in the
orchestrator (detection, planning, tree kill) and in each slot (pinning, death watch).
"""
