"""The worker's ComfyUI side: the supervised ComfyUI process and its client, the
runner that executes one job on it, the translation of ComfyUI's events to wire
events, the description of its output files, and `comfyui_nodes/`, the hook
folder loaded into that ComfyUI (a plain folder, not a package of ours).
"""
