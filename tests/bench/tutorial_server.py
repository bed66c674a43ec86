#!/usr/bin/python3
# The tutorial's thread-pool server (../../../shared/seed/), ported to Python 3
# as is: pickle protocol 0 payload (the 26 bytes of [1, 2, 7, 9, 0]), a fixed
# pool of threads fed by an unbounded queue.Queue, listen(5), 10 blocking
# recv(1024) per client, each printed. Only differences: the thread count and
# the port come from the command line, and it binds 127.0.0.1 (loopback only).
# usage: tutorial_server.py PORT [THREADS (default 2)]
import pickle
import queue
import socket
import sys
import threading

someList = [1, 2, 7, 9, 0]
pickledList = pickle.dumps(someList, protocol=0)


class ClientThread(threading.Thread):
    def run(self):
        while True:
            client = clientPool.get()
            if client is not None:
                print('Received connection:', client[1][0])
                client[0].send(pickledList)
                for x in range(10):
                    print(client[0].recv(1024))
                client[0].close()
                print('Closed connection:', client[1][0])


port = int(sys.argv[1]) if len(sys.argv) > 1 else 2727
nthreads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
clientPool = queue.Queue(0)
for x in range(nthreads):
    ClientThread().start()
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(('127.0.0.1', port))
server.listen(5)
while True:
    clientPool.put(server.accept())
