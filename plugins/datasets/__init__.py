"""Built-in dataset plugins: lamem, lnsim, memcat, things, figrim, sun, csv and the synthetic demo
(release.py: what the readers of the field's releases share)."""
