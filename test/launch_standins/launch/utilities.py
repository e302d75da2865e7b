def perform_substitutions(context, subs):
    """Text, a substitution, or a list of both -> the joined string."""
    if isinstance(subs, str):
        return subs
    if not isinstance(subs, (list, tuple)):
        subs = [subs]
    return "".join(s if isinstance(s, str) else context.perform_substitution(s) for s in subs)
