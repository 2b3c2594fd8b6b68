"""multi2cap.media"""
