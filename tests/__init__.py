"""Tests of expkit, mirroring src/expkit/."""
