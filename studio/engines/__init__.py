"""Engines: one module per tool. A request goes in, a result comes out; Qt never appears here."""
