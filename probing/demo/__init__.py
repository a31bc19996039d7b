"""The demo's backend: everything `app.py` calls, with no Gradio in it.

- `backend`: one request from text to scores, heatmap and views (one forward pass), report files for the tab;
- `guard`: the demo's policy: allow-listed models, bounded fields checked before any parser, the global
  limit on forward passes, the model gate that answers "loading" instead of holding a worker;
- `explore`: one sentence: its pronouns and negation cues, the words a visitor names, its head scores;
- `candidates`: the nouns and names of a typed sentence, offered as antecedents;
- `heatmap`, `glossary`: the layer x head heatmap and the plain labels of every number shown;
- `word_attention`: one head's attention from the source word to each word (the word-shading view);
- `model_menu`: the model list, hub ids only where the hub answers;
- `report_page`: the Probing report tab's summary in words and its one-archive download.
"""
