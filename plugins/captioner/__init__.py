"""The Show-Attend-and-Tell captioner whose soft attention `ours` uses: the network (sat),
training it on MS COCO (sat_coco) and importing a widely shared checkpoint (sat_import)."""
