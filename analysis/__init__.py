"""Tables and figures from the results store. Imports neither torch nor Ray."""
