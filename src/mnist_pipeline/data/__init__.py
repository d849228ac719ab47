"""The data stages: sources and download, the IDX format, parsing, splits and Parquet tables, image preprocessing."""
