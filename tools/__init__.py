"""Commands a user runs that are not pipeline stages (python -m tools.<name>); nothing imports them."""
