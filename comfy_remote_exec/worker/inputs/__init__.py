"""What a job brings in: media checks (`media`), fetching URLs safely (`urls`),
the content-addressed blob store (`blobs`), and placing inputs and applying
overrides in the workflow (`prepare`).
"""
