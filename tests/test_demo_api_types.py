"""The API page declares what each endpoint returns (it listed every return type as Any: under
`from __future__ import annotations` Gradio read the annotation "dict" as a string)."""


def test_every_endpoint_declares_its_parameter_and_return_types():
    import app
    info = app.build_demo().get_api_info()["named_endpoints"]
    returns = {name: [r["python_type"]["type"] for r in endpoint["returns"]] for name, endpoint in info.items()}
    assert returns == {"/score_heads": ["dict(str, Any)"], "/head_view": ["str"], "/patch_heads": ["dict(str, Any)"]}
    for endpoint in info.values():
        assert all(p["python_type"]["type"] != "Any" for p in endpoint["parameters"])
