"""Label names and value scales shared by every task, writer and report.

Every array and output file that carries emotion values names its columns with these lists and
states its scale, so nobody has to guess which index is which emotion.
"""

# ERI (Hume-Reaction, ABAW5): per-video self-reported intensities, each row normalised by its max.
ERI_EMOTIONS: tuple[str, ...] = (
    "Adoration", "Amusement", "Anxiety", "Disgust", "Empathic-Pain", "Fear", "Surprise",
)
ERI_SCALE = "intensity in [0, 1]; per-video self-report normalised by the video's maximum (max = 1)"

# EXPR (Aff-Wild2, ABAW): one class per frame; -1 in annotation files = not annotated.
EXPR_CLASSES: tuple[str, ...] = (
    "Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other",
)
EXPR_IGNORE = -1
EXPR_SCALE = "probability in [0, 1] per class, rows sum to 1"

# usual spellings of expression classes -> canonical name (lower-case keys); read by fine-tuning's class sets
# (training.finetune_data) and by the manifests' --label-map (data.label_map)
EXPRESSION_SYNONYMS: dict[str, str] = {
    "neutral": "Neutral", "happy": "Happiness", "happiness": "Happiness", "joy": "Happiness",
    "sad": "Sadness", "sadness": "Sadness", "surprise": "Surprise", "surprised": "Surprise",
    "fear": "Fear", "fearful": "Fear", "afraid": "Fear", "disgust": "Disgust", "disgusted": "Disgust",
    "anger": "Anger", "angry": "Anger", "contempt": "Contempt", "other": "Other",
}


def eri_index(name: str) -> int:
    """Index of an ERI emotion, accepting 'Empathic Pain' / 'empathic_pain' spellings."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    for i, emotion in enumerate(ERI_EMOTIONS):
        if emotion.lower() == key:
            return i
    raise KeyError(f"unknown ERI emotion {name!r}; valid: {', '.join(ERI_EMOTIONS)}")
