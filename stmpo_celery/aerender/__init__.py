"""After Effects' command line renderer: the argv we build, the log we parse, and the
simulator that stands in for it in tests and demos.

The argv and the log parser run inside a slot; :mod:`.simulator` is its own process
(``stmpo-fake-aerender``), a launcher plus a separate renderer, as the real program is.
"""
