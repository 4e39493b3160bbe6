import no_such_package_for_regulab_corpus

def make():
    pass
