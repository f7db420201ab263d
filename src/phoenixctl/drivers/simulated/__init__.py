"""The simulated provider: a rehearsal tool. Servers and balancers exist only as records in
`.phoenix/simulated/` (world.py), with modelled boot, health and drain durations; nothing
runs, addresses are not real, no traffic can be sent (drivers.py). The engine never imports
it: the registry loads it by name."""
