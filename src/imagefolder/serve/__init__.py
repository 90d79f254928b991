"""``imagefolder serve``: a gradio page to sample, edit with a mask and reconstruct.

``logic`` holds everything the page does without gradio (tested directly); ``app`` lays out the page with gradio,
an optional dependency (``pip install -e ".[serve]"``).
"""
