"""Models of the three papers; a model package never imports a sibling."""
