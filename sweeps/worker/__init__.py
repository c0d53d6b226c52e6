"""One worker's loop: propose -> claim -> train -> prune -> store, and launching many."""
