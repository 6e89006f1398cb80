"""The launch scripts, run as files (`python launch/sft.py ...`); a package so that they share `launch._unshadow` and
`launch.pipeline.run` (the benchmarks import it too)."""
