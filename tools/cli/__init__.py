"""The top floor: the ``hearth`` commands (``main.py``: serve, key, models, status, bench), the
default-model bootstrap and the tiny test model maker. Everything may be imported from here;
nothing below (api/, scheduler/, engine/, the rest of tools/) imports this package."""
