"""Data: decode (io), discover (sources), split, cache and batch images."""
