"""Scaling out on existing engines: distributed builds (:mod:`ragroute.scale.ray_build`)."""
