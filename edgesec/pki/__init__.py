"""edgesec.pki: the site's offline CA (root, intermediate, server/client/signing leaves, CRL, trust bundle)."""
