"""Value conversions shared by index extraction and (later) search-parameter parsing, so that a
stored index value and a searched value are always normalised the same way."""
