"""Tools that run the fleet: the runner agent on CI runners, tunnel and fleet set-up, checks."""
