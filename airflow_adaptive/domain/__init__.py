"""Pure domain types: no I/O, stdlib and numpy only."""
