"""FLUX.1 (dev and schnell): layouts, offline loading, bundled configs and tokenizers.

Everything FLUX-specific in `lorakit.models` lives in this package; the SD family check
only asks `keys.flux_layout` whether a file is FLUX.1 so it can say so in one line. The
package imports nothing itself (import `flux.loader`, `flux.model`), so that light check
does not pull in the loaders.
"""
