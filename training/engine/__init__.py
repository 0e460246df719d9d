"""The training engine: torch + transformers only (no Django, no labeling). Importing this
package imports no torch: the web process reads the config classes from engine/config.py."""
