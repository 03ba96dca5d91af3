print("hello from the testbed")
