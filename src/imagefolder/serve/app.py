"""The ``imagefolder serve`` page, laid out with gradio (an optional dependency: ``pip install -e ".[serve]"``).

Three tabs over one model (``logic.ServeModel``): Sample (class, count, seed; the grid and the first picture after
each scale), Edit (upload or pick a picture, paint the region to redraw, choose a class) and Reconstruct (upload;
the reconstruction after each scale). The sampling options sit above the tabs and serve Sample and Edit. Every
request waits in one queue that runs a single request at a time (one shared concurrency slot), so visitors never
run the model at once. What the page does is in ``logic``; this module only wires it to gradio.
"""
from __future__ import annotations

import functools

import gradio as gr

from .logic import InputError, ServeModel, Settings, editor_inputs, read_picture

QUEUE_SIZE = 32  # requests waiting at most; later visitors are told the page is busy
SLOT = "model"   # the one concurrency slot every request shares


def _page_errors(fn):
    """InputError (and the model's own ValueError) become a message on the page instead of a failed request."""
    @functools.wraps(fn)
    def wrapped(*args):
        try:
            return fn(*args)
        except (InputError, ValueError) as e:
            raise gr.Error(str(e), print_exception=False) from None
    return wrapped


def build_app(model: ServeModel) -> gr.Blocks:
    d = model.defaults
    sizes = f"{model.size} px, {model.scales} scales ({', '.join(str(pn) for pn in model.gen.patch_nums)})"
    with gr.Blocks(title="imagefolder", analytics_enabled=False) as app:
        gr.Markdown(f"## ImageFolder: next-scale generation with folded tokens\nModel: {model.source}; "
                    f"{len(model.class_names)} classes, {sizes}. One request runs at a time; at most "
                    f"{model.limits.max_images} pictures a request.")
        with gr.Accordion("Sampling options (Sample and Edit)", open=False):
            with gr.Row():
                cfg = gr.Slider(0, 10, value=d.cfg, step=0.05, label="cfg (classifier-free guidance)")
                schedule = gr.Radio(["linear", "constant"], value=d.cfg_schedule, label="cfg schedule",
                                    info="linear: ramps from 0 at the first scale to cfg at the last")
                temperature = gr.Slider(0.05, 3, value=d.temperature, step=0.05, label="temperature")
            with gr.Row():
                top_k = gr.Slider(0, model.gen.V, value=d.top_k, step=1, label="top-k (0 = all codes)")
                top_p = gr.Slider(0, 1, value=d.top_p, step=0.01, label="top-p (0 or 1 = off)")
                smooth = gr.Checkbox(value=d.more_smooth, label="more smooth (VAR's Gumbel-softmax mixtures)")
        options = [cfg, schedule, top_k, top_p, temperature, smooth]

        def settings(seed, *values) -> Settings:
            c, sched, k, p, t, sm = values
            return Settings(cfg=float(c), cfg_schedule=sched, top_k=int(k), top_p=float(p), temperature=float(t),
                            seed=int(seed), more_smooth=bool(sm))

        with gr.Tab("Sample"):
            with gr.Row():
                with gr.Column(scale=1):
                    label = gr.Dropdown(model.choices(), value=0, label="class")
                    num = gr.Slider(1, model.limits.max_images, value=min(8, model.limits.max_images), step=1,
                                    label="number of images")
                    seed = gr.Number(value=d.seed, precision=0, label="seed (image i uses the stream (seed, i))")
                    go = gr.Button("Sample", variant="primary", elem_id="sample-button")
                with gr.Column(scale=2):
                    grid = gr.Gallery(label="samples", columns=4, elem_id="samples", allow_preview=False,
                                      height=440)
                    steps = gr.Gallery(label="the first sample after each scale", columns=model.scales,
                                       elem_id="progression", allow_preview=False, height=200)

            @_page_errors
            def sample(lab, n, s, *values):
                return model.sample(lab, n, settings(s, *values))

            go.click(sample, [label, num, seed, *options], [grid, steps], concurrency_id=SLOT)

        with gr.Tab("Edit"):
            with gr.Row():
                with gr.Column(scale=1):
                    editor = gr.ImageEditor(type="numpy", image_mode="RGBA", sources=["upload", "clipboard"],
                                            brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"),
                                            transforms=(), layers=False, label="picture: paint the region to redraw",
                                            elem_id="editor")
                    pictures = model.example_pictures()
                    examples = gr.Gallery(pictures, label="or pick a picture", columns=4,
                                          allow_preview=False, height=120, elem_id="edit-examples")
                with gr.Column(scale=1):
                    edit_label = gr.Dropdown(model.choices(), value=0, label="class of the redrawn region")
                    keep_painted = gr.Checkbox(False, label="keep the painted region instead (out-painting)")
                    edit_num = gr.Slider(1, model.limits.max_images, value=min(4, model.limits.max_images), step=1,
                                         label="number of edits")
                    edit_seed = gr.Number(value=d.seed, precision=0, label="seed")
                    edit_go = gr.Button("Edit", variant="primary", elem_id="edit-button")
            edited = gr.Gallery(label="picture, reconstruction, kept region, edits", columns=7, elem_id="edits",
                                allow_preview=False, height=240)

            def pick(evt: gr.SelectData):
                picture = pictures[evt.index]
                return {"background": picture, "layers": [], "composite": picture}

            @_page_errors
            def edit(value, lab, n, keep, s, *values):
                picture, painted = editor_inputs(value, model.limits)
                if not painted.any() and not keep:
                    gr.Info("nothing painted: every position keeps the picture (paint the region to redraw)")
                return model.edit(picture, painted, lab, n, settings(s, *values), keep_painted=bool(keep))

            examples.select(pick, None, editor, queue=False)  # no model: does not wait for the model's turn
            edit_go.click(edit, [editor, edit_label, edit_num, keep_painted, edit_seed, *options], edited,
                          concurrency_id=SLOT)

        with gr.Tab("Reconstruct"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.Image(type="filepath", sources=["upload", "clipboard"], label="picture",
                                      elem_id="recon-input")
                    recon_go = gr.Button("Reconstruct", variant="primary", elem_id="recon-button")
                with gr.Column(scale=2):
                    recon = gr.Gallery(label="the picture, then its reconstruction after each scale", columns=4,
                                       elem_id="reconstructions", allow_preview=False, height=440)

            @_page_errors
            def reconstruct(path):
                return model.reconstruct(read_picture(path, model.limits))

            recon_go.click(reconstruct, upload, recon, concurrency_id=SLOT)
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float = 20.0,
           block: bool = True) -> None:
    """Serve ``app`` on host:port (uploads up to ``max_upload_mb``); ``block=False`` returns once it listens."""
    app.launch(server_name=host, server_port=port, max_file_size=int(max_upload_mb * 2**20), show_error=True,
               quiet=True, ssr_mode=False, prevent_thread_lock=not block)
