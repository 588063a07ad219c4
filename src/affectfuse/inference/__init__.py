"""Video -> per-frame results: face expressions, voice windows, fusion, ERI (``affectfuse predict``)."""
