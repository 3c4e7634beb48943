from .overlay import overlay_png
