"""Development tools used by scripts and tests, kept outside the runtime package: the benchmark's systems
(`bench.py`: imports trl and lm-eval, the `bench` extra) and the headless-browser driver (`browser.py`:
selenium, the `dev` extra). `import domaintune` never loads them. Scripts import them as `devtools.*`
(their folder is on `sys.path` when run as `python scripts/<name>.py`); tests as `scripts.devtools.*`."""
