"""Pure job code: no AWS here. ``numbers`` computes statistics, ``images`` processes pictures."""
